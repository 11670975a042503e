\set id random(1, 600000)
UPDATE with_domains SET status = 'confirmed', updated_at = now() WHERE id = :id;
