-- A review still pending long after its card went up gets a reminder in the card's thread,
-- at most once per reminder interval: when the last one went (NULL: none yet).
ALTER TABLE reviews ADD COLUMN reminded_at timestamptz;
