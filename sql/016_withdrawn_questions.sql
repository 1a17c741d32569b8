-- A question its asker deleted in Slack before its answer reached them is withdrawn: its review
-- closes undecided, nothing is posted to the asker, and it is never curated into training data.
ALTER TABLE answers DROP CONSTRAINT answers_status_check;
ALTER TABLE answers ADD CONSTRAINT answers_status_check
    CHECK (status IN ('running', 'pending_review', 'delivered', 'declined', 'rejected', 'failed', 'withdrawn'));
ALTER TABLE reviews DROP CONSTRAINT reviews_status_check;
ALTER TABLE reviews ADD CONSTRAINT reviews_status_check
    CHECK (status IN ('pending', 'approved', 'edited', 'rejected', 'withdrawn'));
-- When the asker deleted the question (a bot still answering it sees this before showing anything).
ALTER TABLE slack_answers ADD COLUMN deleted_at timestamptz;
