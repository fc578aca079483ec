"""What an upload is: type detection from bytes, thumbnails, probing."""
