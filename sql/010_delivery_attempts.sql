-- How many rounds the Slack bot's post of a delivery failed for a passing reason (Slack busy or
-- down, the thread not on record yet): the row is tried again until this reaches a limit, then
-- given up and logged. NULL: never failed (nullable, so an export from before this imports as is).
ALTER TABLE deliveries ADD COLUMN failed_attempts integer;
