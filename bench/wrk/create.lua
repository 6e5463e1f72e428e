-- POST a demo task.
wrk.method = "POST"
wrk.path = "/api/jobs?action=create"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type":"demo","userId":"bench","payload":{"steps":1,"stepMs":0}}'
