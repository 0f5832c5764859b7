-- A reviewer's queue, newest first: read from their reviewer rows by this index, it costs the
-- same however many requests others have pending.
CREATE INDEX approval_reviewers_by_user_newest ON approval_reviewers (user_id, approval_id);
