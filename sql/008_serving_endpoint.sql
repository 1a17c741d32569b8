-- Where the bot sends generation requests. A TGI promotion starts a new server with the new
-- adapter, so the URL switches together with the live adapter (same transaction, same
-- NOTIFY flywheel_live_adapter). No row: the configured FLYWHEEL_LLM_URL.
CREATE TABLE serving_endpoint (
    id          int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    url         text NOT NULL,
    pid         int,                          -- the server process the TGI controller started
    host        text,                         -- the machine that process runs on
    adapters    text NOT NULL DEFAULT '',     -- its LORA_ADAPTERS (name=/path,...)
    updated_at  timestamptz NOT NULL DEFAULT now()
);
