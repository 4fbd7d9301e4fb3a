"""Values that cross a boundary (a process, a door): requests and settings, messages, results, errors."""
