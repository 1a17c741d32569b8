-- When each item of a dataset version was curated, frozen with it: of two curations of the same
-- question, training keeps the later one. NULL for items frozen before this column existed.
ALTER TABLE dataset_items ADD COLUMN curated_at timestamptz;
