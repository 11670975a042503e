\set id random(1, 600000)
UPDATE one_check SET status = 'confirmed', updated_at = now() WHERE id = :id;
