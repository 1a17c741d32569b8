-- A question keeps its text until it is answered, with the bot process answering it (`owner`;
-- NULL: waiting for any bot), and every bot process notes that it is alive; a question whose
-- process stopped noting it (killed, out of memory) goes back to waiting, for a running bot.
ALTER TABLE slack_answers RENAME COLUMN waiting_question TO question;
ALTER TABLE slack_answers ADD COLUMN owner text;
DROP INDEX slack_answers_waiting;
CREATE INDEX slack_answers_unanswered ON slack_answers (owner) WHERE question IS NOT NULL;

CREATE TABLE bot_processes (
    id       text PRIMARY KEY,                      -- host:pid:random, one per bot process start
    seen_at  timestamptz NOT NULL DEFAULT now()
);
