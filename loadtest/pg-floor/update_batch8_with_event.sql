\set a random(1, 600000)
\set b random(1, 600000)
\set c random(1, 600000)
\set d random(1, 600000)
\set e random(1, 600000)
\set f random(1, 600000)
\set g random(1, 600000)
\set h random(1, 600000)
WITH p AS (SELECT unnest(ARRAY[:a, :b, :c, :d, :e, :f, :g, :h]::bigint[]) AS id),
     u AS (UPDATE plain SET status = 'confirmed', updated_at = now() FROM p WHERE plain.id = p.id RETURNING plain.id, plain.status)
INSERT INTO events (aggregate_id, payload) SELECT 'h-' || id, jsonb_build_object('status', status) FROM u;
