from setuptools import find_namespace_packages, setup

# Optional parts; the runtime install (and the Docker image, from requirements.lock) has neither.
# embedded: the MongoDB wire server started when MONGODB_URI is empty (scripts/run.sh installs it)
EMBEDDED = ["nx-27017>=0.8.1"]
# cli: `mediaserver upload` (tus client and its HTTP library)
CLI = ["tuspy>=1.1", "requests>=2.32"]

setup(
    name="mediaserver-gateway",
    version="0.1.0",
    description="Resumable media upload gateway: tus 1.0 into S3 multipart uploads, state in MongoDB",
    python_requires=">=3.11",
    # namespace discovery also finds the page's data-only folders, gateway/static and
    # gateway/static/vendor (the Uppy bundle scripts/build_web.sh makes), and declares them as the
    # packages Python sees them as (find_packages left them out, with ~45 lines of warnings)
    packages=find_namespace_packages(include=[name + suffix for name in ("gateway", "streaming", "auth", "metadata", "processing")
                                              for suffix in ("", ".*")], exclude=["*.__pycache__"]),
    include_package_data=True,
    package_data={"gateway": ["*.json"], "gateway.static": ["*"], "gateway.static.vendor": ["*"], "auth": ["*.txt.gz"]},
    install_requires=[
        # <7: gateway/in_place_body.py wraps Tornado's private HTTP1Connection._read_fixed_body
        # (tests/test_packaging.py fails loudly when it is gone)
        "tornado>=6.5.8,<7",
        "boto3>=1.35",
        "pymongo>=4.13",
        # crypto: RS256/ES256 tokens of an identity provider (JWT_JWKS_URL)
        "pyjwt[crypto]>=2.15.1",
        "pwdlib[argon2]>=0.2",
        "prometheus-client>=0.21",
        "Pillow>=11",
        "python-multipart>=0.0.20",
        "pillow-heif>=0.18",
        # CRC32 of every part sent to S3 (ISA-L: the same values as zlib's, ~15x less CPU)
        "isal>=1.7",
    ],
    extras_require={
        "embedded": EMBEDDED,
        "cli": CLI,
        "test": EMBEDDED + CLI + [
            "pytest>=8",
            "pytest-asyncio>=0.24",
            "moto[server]>=5.1",
            "requests>=2.32",
            "psutil>=6",
            "jsonschema>=4.20",
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.32,<5",
            "import-linter>=2.1",
            "hypothesis>=6.100",
        ],
        "bench": EMBEDDED + CLI + ["pyvips>=2.2", "pyvips-binary>=8.16", "psutil>=6", "requests>=2.32", "moto[server]>=5.1",
                                   "gunicorn>=23"],
    },
    # bench: pyvips is the thumbnail baseline of bench/thumbnails.py; gunicorn serves moto with
    # kept-alive connections, as S3 does (bench/moto_app.py)
    entry_points={"console_scripts": ["mediaserver=gateway.cli:main"]},
)
