-- A second vector per chunk: its label (document title and heading path) alone. A question
-- often matches what a passage is about (its heading, an FAQ's question) better than its body;
-- search scores a chunk by the better of the two similarities.
ALTER TABLE chunks ADD COLUMN heading_embedding vector(384);
CREATE INDEX chunks_heading_embedding_hnsw ON chunks USING hnsw (heading_embedding vector_cosine_ops);
