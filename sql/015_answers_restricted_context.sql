-- An answer drafted with earlier turns of its thread in the prompt may repeat what they drew from
-- documents not everyone may see, though its own sources are public: such answers are kept from
-- review cards and training data like those drafted from restricted documents themselves.
ALTER TABLE answers ADD COLUMN restricted_context boolean NOT NULL DEFAULT false;
