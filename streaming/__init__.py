"""Bytes: the tus protocol, the upload state machine, object stores and ranged reads."""
