-- The currencies a deal or lead may be in: the ISO 4217 codes (as pycountry 26.2.16 lists them).
-- The service layer checks the same list; this keeps direct writes (a signed-in user may write `public` through
-- Supabase's API) to it as well. The constraints are NOT VALID: rows written before stay as they are (and keep
-- updating), only a new or changed currency is checked.
create table private.currencies (
  code char(3) primary key check (code ~ '^[A-Z]{3}$')
);

insert into private.currencies (code) values
  ('AED'), ('AFN'), ('ALL'), ('AMD'), ('AOA'), ('ARS'), ('AUD'), ('AWG'), ('AZN'), ('BAM'), ('BBD'), ('BDT'),
  ('BHD'), ('BIF'), ('BMD'), ('BND'), ('BOB'), ('BOV'), ('BRL'), ('BSD'), ('BTN'), ('BWP'), ('BYN'), ('BZD'),
  ('CAD'), ('CDF'), ('CHE'), ('CHF'), ('CHW'), ('CLF'), ('CLP'), ('CNY'), ('COP'), ('COU'), ('CRC'), ('CUP'),
  ('CVE'), ('CZK'), ('DJF'), ('DKK'), ('DOP'), ('DZD'), ('EGP'), ('ERN'), ('ETB'), ('EUR'), ('FJD'), ('FKP'),
  ('GBP'), ('GEL'), ('GHS'), ('GIP'), ('GMD'), ('GNF'), ('GTQ'), ('GYD'), ('HKD'), ('HNL'), ('HTG'), ('HUF'),
  ('IDR'), ('ILS'), ('INR'), ('IQD'), ('IRR'), ('ISK'), ('JMD'), ('JOD'), ('JPY'), ('KES'), ('KGS'), ('KHR'),
  ('KMF'), ('KPW'), ('KRW'), ('KWD'), ('KYD'), ('KZT'), ('LAK'), ('LBP'), ('LKR'), ('LRD'), ('LSL'), ('LYD'),
  ('MAD'), ('MDL'), ('MGA'), ('MKD'), ('MMK'), ('MNT'), ('MOP'), ('MRU'), ('MUR'), ('MVR'), ('MWK'), ('MXN'),
  ('MXV'), ('MYR'), ('MZN'), ('NAD'), ('NGN'), ('NIO'), ('NOK'), ('NPR'), ('NZD'), ('OMR'), ('PAB'), ('PEN'),
  ('PGK'), ('PHP'), ('PKR'), ('PLN'), ('PYG'), ('QAR'), ('RON'), ('RSD'), ('RUB'), ('RWF'), ('SAR'), ('SBD'),
  ('SCR'), ('SDG'), ('SEK'), ('SGD'), ('SHP'), ('SLE'), ('SOS'), ('SRD'), ('SSP'), ('STN'), ('SVC'), ('SYP'),
  ('SZL'), ('THB'), ('TJS'), ('TMT'), ('TND'), ('TOP'), ('TRY'), ('TTD'), ('TWD'), ('TZS'), ('UAH'), ('UGX'),
  ('USD'), ('USN'), ('UYI'), ('UYU'), ('UYW'), ('UZS'), ('VED'), ('VES'), ('VND'), ('VUV'), ('WST'), ('XAD'),
  ('XAF'), ('XAG'), ('XAU'), ('XBA'), ('XBB'), ('XBC'), ('XBD'), ('XCD'), ('XCG'), ('XDR'), ('XOF'), ('XPD'),
  ('XPF'), ('XPT'), ('XSU'), ('XTS'), ('XUA'), ('XXX'), ('YER'), ('ZAR'), ('ZMW'), ('ZWG');

-- Reference data the system reads like every other table (a GDPR erasure verifies every table it can see).
grant select on private.currencies to service_role;

alter table public.deals
  add constraint deals_currency_known foreign key (currency) references private.currencies (code) not valid;

alter table public.leads
  add constraint leads_currency_known foreign key (currency) references private.currencies (code) not valid;
