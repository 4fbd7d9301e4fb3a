"""What to download: manifests and URL lists, names and paths, and the hubs' references."""
