"""MongoDB access: users, uploads, media; indexes; the embedded default server."""
