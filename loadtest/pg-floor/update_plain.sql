\set id random(1, 600000)
UPDATE plain SET status = 'confirmed', updated_at = now() WHERE id = :id;
