-- The attempts that put a delivery in the dead-letter queue (outcome dead, or gone: a 410), in id order: the outbox
-- that `switchyard.delivery.dead` notices are published from (see host/src/notices.rs). Every node reads the ones
-- written since it last looked, every poll interval. Partial, so the attempts that succeed or are retried, nearly
-- all of them, do not write to it; building it reads the attempts table once.
-- Keep in step with migrations/sqlite/0013_dead_attempts.sql.

CREATE INDEX attempts_dead ON attempts (id) WHERE outcome IN ('dead', 'gone');
