#!/bin/sh
# pushmirror alert relay (an example to adapt): turns the event that `[alerts] command` gets
# on stdin into a chat message and POSTs it to an incoming webhook that takes
# {"text": "..."}: Slack, Mattermost, Rocket.Chat, or a Matrix room through matrix-hookshot's
# generic webhooks.
#
#   [alerts]
#   command = ["/usr/local/bin/alert-relay-example.sh", "/etc/pushmirror/secrets/chat-webhook.url"]
#
# The chat webhook's URL is a secret: it is read from the file named by the first argument
# (mode 0600, owned by the daemon's user) and given to curl on stdin, never in its argv. The
# daemon runs this with an empty environment but PATH, and the event on stdin:
#   {"event": "mirror_failed" | "mirror_recovered", "mirror", "repo", "url" (masked),
#    "update_status", "error", "failing_since", "at"}
# A non-zero exit is logged by the daemon and the delivery retried (5 attempts in all).
# Needs jq and curl.
set -eu
url_file=${1:?usage: alert-relay-example.sh URL_FILE}
event=$(cat)
text=$(printf '%s' "$event" | jq -r '
  if .event == "mirror_failed" then
    "mirror \(.mirror) is failing (since \(.failing_since)): \((.error // "") | split("\n") | .[0])\n\(.repo) -> \(.url)"
  else
    "mirror \(.mirror) recovered at \(.at) (failing since \(.failing_since))\n\(.repo) -> \(.url)"
  end')
body=$(jq -cn --arg text "$text" '{text: $text}')
url=$(head -n 1 "$url_file")
printf 'url = "%s"\n' "$url" | curl --silent --show-error --fail --max-time 10 \
    -H 'Content-Type: application/json' --data-binary "$body" -K -
