"""The tus 1.0 resumable upload protocol over the upload state machine."""
