from setuptools import find_packages, setup

setup(
    name="mediaserver-gateway",
    version="0.1.0",
    description="Resumable media upload gateway: tus 1.0 into S3 multipart uploads, state in MongoDB",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway*", "streaming*", "auth*", "metadata*", "processing*"]),
    include_package_data=True,
    package_data={"gateway": ["static/*", "static/**/*", "*.json"]},
    install_requires=[
        "tornado>=6.5.8",
        "boto3>=1.35",
        "pymongo>=4.13",
        "nx-27017>=0.8.1",
        "pyjwt>=2.15.1",
        "pwdlib[argon2]>=0.2",
        "prometheus-client>=0.21",
        "Pillow>=11",
        "python-multipart>=0.0.20",
        "pillow-heif>=0.18",
        "tuspy>=1.1",
    ],
    extras_require={
        "test": [
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
        "bench": ["pyvips>=2.2", "pyvips-binary>=8.16", "psutil>=6", "requests>=2.32", "moto[server]>=5.1"],
    },
    # bench: pyvips is the thumbnail baseline of bench/thumbnails.py
    entry_points={"console_scripts": ["mediaserver=gateway.cli:main"]},
)
