-- Adapter registry: every LoRA adapter a retrain produced, and which one is live.
CREATE TABLE adapters (
    id              bigserial PRIMARY KEY,
    version         int NOT NULL UNIQUE,
    name            text NOT NULL UNIQUE,          -- the adapter_id the serving backend knows it by
    base_model      text NOT NULL,
    dataset_version int,
    path            text NOT NULL,                 -- folder with adapter_config.json + weights
    status          text NOT NULL DEFAULT 'training'
                    CHECK (status IN ('training', 'ready', 'live', 'retired', 'failed')),
    hyperparams     jsonb NOT NULL DEFAULT '{}',
    metrics         jsonb NOT NULL DEFAULT '{}',
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz
);
-- At most one live adapter, enforced by the database.
CREATE UNIQUE INDEX adapters_one_live ON adapters ((status)) WHERE status = 'live';
