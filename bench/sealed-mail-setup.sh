# Sourced by bench/seal.sh and bench/deliver.sh: a pki of their own in a temporary directory.

# Stops the server ($server), the transport sink ($sink) and the delaying proxy ($proxy) when they
# run, and removes $work.
bench_cleanup() {
  local pid
  for pid in "${server:-}" "${sink:-}" "${proxy:-}"; do
    [ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
  done
  rm -rf "$work"
}

# bench_start NAME: a temporary directory, entered ($work: removed on exit, what runs stopped), a
# free loopback port ($port), pki.toml for a server there with the bank's domains as the
# enterprise's (the caller appends its own tables), and the machine printed.
bench_start() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/pki-bench-$1.XXXXXX")
  server=""
  sink=""
  # After what is already set to run on exit (say scripts/with-mail.sh's Postfix stopped).
  local previous
  previous=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT$//")
  trap "bench_cleanup${previous:+; $previous}" EXIT
  cd "$work"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >pki.toml <<CONFIG
[server]
listen = "127.0.0.1:$port"
[ca]
public_base_url = "http://127.0.0.1:$port"
[validation]
enterprise_domains = ["bank.example", "example.com"]
CONFIG
  export PKI_CONFIG=$work/pki.toml PKI_DATA=$work/data
  echo "## machine"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
}

# bench_sender: the CA made, the sender identity `statements`, and an API key with the mail
# permission ($key, no practical quota) allowed to send as it.
bench_sender() {
  "$PKI" init >/dev/null
  "$PKI" mail sender add --name statements --email statements@bank.example >/dev/null
  key=$("$PKI" apikey create --name bench --permission mail --rate 1000000000 2>/dev/null)
  "$PKI" mail sender allow --name statements --key bench >/dev/null
}
