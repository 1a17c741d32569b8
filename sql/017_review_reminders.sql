-- A review still pending long after its card went up gets a reminder in the card's thread, again
-- after as long: the interval runs from here (when the card went up, or the last reminder).
ALTER TABLE reviews ADD COLUMN reminder_from timestamptz;
