-- wrk script: POST /api/v1/jobs with an echo job (API key and tenant from the
-- environment: CAP_API_KEY, CAP_TENANT, CAP_TOPIC).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("CAP_API_KEY") or "bench"
wrk.headers["X-Tenant-ID"] = os.getenv("CAP_TENANT") or "bench"
wrk.body = '{"topic":"' .. (os.getenv("CAP_TOPIC") or "job.echo") .. '","prompt":"hello"}'
