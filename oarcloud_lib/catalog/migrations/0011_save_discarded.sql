-- A failed save-on-exit keeps its changes on the node until its owner retries
-- it (oarcloud image saves --retry ID [--name NEW]) or discards them
-- (--discard ID): state `discarded` then.
ALTER TABLE image_saves DROP CONSTRAINT image_saves_state_check,
    ADD CONSTRAINT image_saves_state_check
        CHECK (state IN ('pending', 'kept', 'saving', 'done', 'failed', 'discarded'));
