"""The disk side: files under a target folder, preallocation and syncs, staging buffers, hashing while writing, verification."""
