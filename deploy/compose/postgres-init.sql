-- One database per service, and one per hospital for slot-inventory
-- (names match helm/jyt/values-demo.yaml and k8s/overlays/dev).
CREATE DATABASE jyt_card;
CREATE DATABASE jyt_accounting;
CREATE DATABASE jyt_slot_pumch;
CREATE DATABASE jyt_slot_bjh;
CREATE DATABASE jyt_slot_chaoyang;
