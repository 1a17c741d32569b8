-- A question the bot took up but had not begun to answer when it stopped (a restart, a deploy):
-- its text is kept here until a bot starts again and answers it in the same thread.
ALTER TABLE slack_answers ADD COLUMN waiting_question text;
CREATE INDEX slack_answers_waiting ON slack_answers (id) WHERE waiting_question IS NOT NULL;
