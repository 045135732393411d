-- When orderquery last wrote the row (unix microseconds, database clock):
-- read-model lag and the end-to-end benchmark's POST-to-final latency.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS applied_at BIGINT NOT NULL DEFAULT 0;
