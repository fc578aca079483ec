"""moto's S3 (and other services) as one WSGI application, for a server that keeps connections alive.

`python -m moto.server` runs on Werkzeug's development server, which answers every request with
`Connection: close`: each S3 call of a bench then pays a new TCP connection, and over TLS a
handshake and a CA bundle load (several ms of the client's CPU per part), which AWS's endpoints
do not make clients pay. bench/upload.py serves this application with gunicorn (one process, so
one moto state; threads for concurrency; HTTP/1.1 keep-alive) when gunicorn is installed.
"""

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
