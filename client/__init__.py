"""The ComfyUI API client the commands use: one server over its HTTP/websocket API (api_client, with transport
for TLS, credentials and names, answers and object_info reading what it says), a batch of jobs over many servers
(dispatch, servers, job, outputs, manifest), a private server for one run (local_server) and ComfyUI inside this
process (comfy_session). Addresses arrive built (transport.server_address, called by the command); nothing here
imports the commands."""
