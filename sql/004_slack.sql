-- Slack: the events the bot has seen (so a retry is not answered twice) and where the bot's
-- messages for each question live (so any bot process can update them).

-- Slack retries an event it thinks timed out (X-Slack-Retry-Num). The first delivery records
-- its id here; a retry whose id is already here is dropped. The bot prunes old ids: Slack
-- retries within minutes.
CREATE TABLE slack_events (
    event_id    text PRIMARY KEY,
    event_type  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slack_events_received ON slack_events (received_at);

-- One row per question asked in Slack. The same message can reach the bot twice under two
-- event ids (a mention in a DM thread), hence the unique (channel, question ts).
CREATE TABLE slack_answers (
    id                bigserial PRIMARY KEY,
    channel_id        text NOT NULL,               -- where the question was asked
    question_ts       text NOT NULL,               -- the asker's message
    thread_ts         text NOT NULL,               -- the thread the bot replies in
    user_id           text NOT NULL,
    event_id          text,
    answer_id         bigint UNIQUE REFERENCES answers (id) ON DELETE CASCADE,
    reply_ts          text,                        -- placeholder, updated into the answer / review note / apology
    review_channel_id text,                        -- the review card, while one exists
    review_ts         text,
    delivered_ts      text,                        -- the reviewed answer (or refusal) posted in the thread
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, question_ts)
);
