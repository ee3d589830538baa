-- Why: keep the latest connectivity test result (JSON, with its checked_at) on the provider so a
-- listing shows reachability without probing anything.
ALTER TABLE providers ADD COLUMN last_test TEXT;
