"""The ops page: a web view of every prompt's loop served on the daemon's web port (`/ui`)."""
