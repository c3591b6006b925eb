"""The shared service layer: every read and write of the CRM, under the caller's permissions."""
