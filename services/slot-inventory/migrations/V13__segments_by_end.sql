-- The no-show sweep runs every second and asks for confirmed bookings of
-- segments that ended before a cutoff. Without an index on the end it read
-- every segment and hash-joined every confirmed booking, each second, in
-- each hospital (peak-day: up to 6.6 ms a call while the machine was busy,
-- about an eighth of a core across 20 hospitals). With it, the per-second
-- sweep reads only the segments that ended in the last day (the whole
-- history is swept every 15 seconds).
CREATE INDEX segments_by_end ON segments (ends_at);
