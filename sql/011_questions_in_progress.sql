-- A question a bot process is answering keeps its text and that process's id until the run
-- ends, and every bot process notes that it is alive; a question whose process stopped noting
-- it (killed, out of memory) goes back to waiting, for a running bot to answer.
ALTER TABLE slack_answers ADD COLUMN question text, ADD COLUMN owner text;
CREATE INDEX slack_answers_in_progress ON slack_answers (owner) WHERE question IS NOT NULL;

CREATE TABLE bot_processes (
    id       text PRIMARY KEY,                      -- host:pid:random, one per bot process start
    seen_at  timestamptz NOT NULL DEFAULT now()
);
