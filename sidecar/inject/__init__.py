"""Kubernetes sidecar injection: a mutating admission webhook that adds authsidecar to pods.

    settings.py      ◇ the injector's own configuration (closed, frozen, every error names its key;
                       load_injector_settings is its one reader of a file)
    annotations.py   ◇ the ``authsidecar.io/*`` pod annotations → what one pod asks for
    container.py     ◇ the injected container and volumes, from the injector's sidecar template
    patch.py         ◇ a pod → the RFC 6902 JSON Patch that injects the sidecar, or why not
    review.py        ◇ AdmissionReview ``admission.k8s.io/v1`` bytes in → response out
    tls.py           ◆ the serving certificate, reloaded when its files change
    server.py        ◆ the HTTPS listener (/mutate) and the admin listener (/healthz /readyz /metrics)

Everything marked ◇ is pure: no aiohttp, no files, no clock; the server does the I/O around it.
"""
