\set id random(1, 600000)
UPDATE with_checks SET status = 'confirmed', updated_at = now() WHERE id = :id;
