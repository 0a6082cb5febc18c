"""Server URLs, credentials and untrusted answers without a server: names never hold secrets, redaction,
servers-file lines with their own options, refused header lines, unsafe output names and shapes."""
from __future__ import annotations

import pytest

from svd_inbetween.client.answers import BadAnswer, execution_seconds, history_error, output_files
from svd_inbetween.client.outputs import _extension
from svd_inbetween.client.transport import (TransportError, TransportOptions, inside, read_servers_file,
                                            server_address)


def test_name_is_scheme_host_port_and_credentials_are_redacted(monkeypatch):
    monkeypatch.setenv("TOKENS", "X-Token: Bearer tok-123456\nX-Other: other-secret")
    a = server_address("https://alice:p%40ss-word@GPU.example.org/comfy/", TransportOptions(header_envs=["TOKENS"]))
    assert a.name == a.url == "https://gpu.example.org:443/comfy"
    assert a.auth == ("alice", "p@ss-word")
    assert a.headers == {"X-Token": "Bearer tok-123456", "X-Other": "other-secret"}
    text = "alice:p%40ss-word@ sent p@ss-word, Bearer tok-123456 and other-secret; token tok-123456"
    assert a.redact(text) == "***@ sent ***, *** and ***; token ***"
    assert server_address("127.0.0.1:8188", TransportOptions()).name == "http://127.0.0.1:8188"
    assert server_address("http://[::1]", TransportOptions()).name == "http://[::1]:80"


@pytest.mark.parametrize("url, options, message", [
    ("ftp://h", {}, "is not an http:// or https:// server URL"),
    ("http://h:70000", {}, "has an invalid port"),
    ("http://u:secret-pw@h/?x=1", {}, "has no ?query"),
    ("https://h", {"ca_cert": "/no/such/ca.pem"}, "--ca-cert /no/such/ca.pem: cannot be read"),
    ("https://h", {"ca_cert": __file__, "insecure": True}, "contradict"),
    ("https://h", {"headers": ["Bearer tok-abcdef"]}, "a header must read 'NAME: VALUE'"),
    ("https://h", {"header_envs": ["SVD_NO_SUCH_VARIABLE"]}, "--header-env SVD_NO_SUCH_VARIABLE: no such"),
    ("https://u:secret-pw@h", {"headers": ["Authorization: Bearer tok-abcdef"]}, "give one of them"),
])
def test_refused_before_anything_is_sent_without_echoing_secrets(url, options, message):
    with pytest.raises(TransportError) as e:
        server_address(url, TransportOptions(**options))
    assert message in str(e.value)
    assert "secret-pw" not in str(e.value) and "tok-abcdef" not in str(e.value)


def test_servers_file_lines_carry_their_own_options(tmp_path, caplog):
    token = tmp_path / "token"
    token.write_text("Authorization: Bearer tok-from-file\n")
    servers = tmp_path / "servers.txt"
    servers.write_text(f"# comment\n\nhttps://a:8443 --insecure\nhttps://b:8443 --header-file '{token}'\n"
                       "http://u:pw-line@c:8188\n")
    a, b, c = read_servers_file(str(servers), TransportOptions(headers=["X-All: all-value"]))
    assert a.insecure and a.ssl is not True and a.headers == {"X-All": "all-value"}
    assert "TLS CERTIFICATE CHECKS ARE OFF for https://a:8443" in caplog.text
    assert b.ssl is True and b.headers == {"X-All": "all-value", "Authorization": "Bearer tok-from-file"}
    assert c.name == "http://c:8188" and c.auth == ("u", "pw-line")
    assert "over plain http" in caplog.text and "pw-line" not in caplog.text
    servers.write_text("https://a:8443 --bogus x\n")
    with pytest.raises(TransportError, match="line 1: unknown option.*--bogus"):
        read_servers_file(str(servers), TransportOptions())


def test_outputs_only_of_the_prompts_nodes_with_safe_names(caplog):
    item = {"filename": "clip_00001.mp4", "subfolder": "", "type": "output"}
    entry = {"outputs": {"9": {"videos": [item]}, "../../x": {"images": [item]}, "77": {"images": [item]},
                         "8": {"images": [{**item, "type": "temp"}]}}}
    assert output_files(entry, {"9", "8"}) == [("9", item)]
    assert "outputs of 2 node(s) the prompt does not have" in caplog.text
    for bad in ("../x.png", "/etc/passwd", "a/b.png", "a\\b.png", "x\0.png"):
        with pytest.raises(BadAnswer, match="unsafe filename"):
            output_files({"outputs": {"9": {"images": [{**item, "filename": bad}]}}}, {"9"})
    with pytest.raises(BadAnswer, match="unsafe subfolder"):
        output_files({"outputs": {"9": {"images": [{**item, "subfolder": "../.."}]}}}, {"9"})
    with pytest.raises(BadAnswer, match="'outputs' is a list"):
        output_files({"outputs": [1]}, {"9"})
    assert _extension("a.MP4") == ".mp4" and _extension("noext") == ".bin" and _extension("a.p n g") == ".bin"


def test_malformed_history_status_is_refused_or_ignored():
    with pytest.raises(BadAnswer, match="status.messages is not a list"):
        history_error({"status": {"status_str": "error", "messages": {"a": 1}}})
    err = history_error({"status": {"status_str": "error", "messages": [1, ["execution_error"], "x"]}})
    assert err[0] == "execution_error" and "no error message" in err[1]["exception_message"]
    assert execution_seconds({"status": {"messages": [["execution_start", {"timestamp": "x"}],
                                                      ["execution_success", {"timestamp": 5}], 3]}}) is None


def test_inside_follows_symlinks(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert inside(str(tmp_path / "out"), str(tmp_path / "out" / "a.png"))
    assert not inside(str(tmp_path / "out"), str(tmp_path / "out" / "link" / "a.png"))
    assert not inside(str(tmp_path / "out"), str(tmp_path / "out" / ".." / "a.png"))
