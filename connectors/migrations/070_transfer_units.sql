-- A transfer declaration carries its unit (% of the tank's capacity, or the capacity's unit).
-- `quantity` stays the quantity the inventory is reckoned in (the tank's capacity unit, converted
-- at ingest); `declared_quantity` and `declared_unit` keep what was declared, for the record.
ALTER TABLE transfers
    ADD COLUMN declared_quantity double precision,
    ADD COLUMN declared_unit     text NOT NULL DEFAULT '',
    ADD COLUMN unit              text NOT NULL DEFAULT '';
