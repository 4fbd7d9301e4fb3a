"""Pure rules, no I/O and no clock: byte ranges and splitting, scheduling, retry, bandwidth, a file's lifecycle, what an HTTP answer means, progress snapshots."""
