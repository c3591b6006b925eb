"""The MCP server: CRM tools, resources and prompts for LLM agents, over the service layer."""
