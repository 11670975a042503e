\set id random(1, 600000)
WITH u AS (UPDATE plain SET status = 'confirmed', updated_at = now() WHERE id = :id RETURNING id, status)
INSERT INTO events (aggregate_id, payload) SELECT 'h-' || id, jsonb_build_object('status', status) FROM u;
