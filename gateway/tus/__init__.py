"""The tus 1.0 resumable upload protocol over the upload engine: the handler and its header grammar."""
