-- When an adapter was rolled back from: it is no longer a rollback target, so rolling back twice
-- goes two promotions back (v3 -> v2 -> v1), not back and forth between the last two.
ALTER TABLE adapters ADD COLUMN rolled_back_at timestamptz;
