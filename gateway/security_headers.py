"""The security headers of every answer, with the Content-Security-Policy the page needs.

The page shows thumbnails from the gateway itself; videos play from the store's own signed URLs
when the store signs them (S3), so that store's origin is allowed as a media source, and only it.
"""

from __future__ import annotations

from typing import Sequence


def content_security_policy(media_origins: Sequence[str] = ()) -> str:
    """The page's CSP: everything from the gateway itself; media also from `media_origins`."""
    media = " ".join(("'self'", "blob:", *media_origins))
    return (
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';"
        f"frame-ancestors 'self';img-src 'self' data: blob:;media-src {media};object-src 'none';"
        "script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';connect-src 'self'"
    )


def security_headers(media_origins: Sequence[str] = ()) -> dict[str, str]:
    """Every security header of an answer (helmet's defaults, with the CSP above)."""
    return {
        "Content-Security-Policy": content_security_policy(media_origins),
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-site",
        "Origin-Agent-Cluster": "?1",
        "Referrer-Policy": "no-referrer",
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff",
        "X-DNS-Prefetch-Control": "off",
        "X-Download-Options": "noopen",
        "X-Frame-Options": "SAMEORIGIN",
        "X-Permitted-Cross-Domain-Policies": "none",
        "X-XSS-Protection": "0",
    }
