-- First-boot user data (oarcloud launch --user-data FILE): stored through the
-- broker, named by the job's cloud.userdata=ID type, run once in each
-- instance of the launch by its node (oarcloud_lib/node/userdata.py).
CREATE TABLE user_data (
    id          serial PRIMARY KEY,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('script', 'cloud-config')),
    script      text NOT NULL CHECK (length(script) <= 262144),
    created     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON user_data TO oarcloud_users;
ALTER TABLE user_data ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_user_data ON user_data FOR SELECT TO oarcloud_users USING (owner = current_user);
ALTER TABLE instances ADD COLUMN user_data integer REFERENCES user_data(id) ON DELETE SET NULL,
    ADD COLUMN user_data_state text
        CHECK (user_data_state IN ('running', 'done', 'failed')),
    ADD COLUMN user_data_exit integer;
