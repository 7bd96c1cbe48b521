#!/usr/bin/env bash
# Make a site's TLS certificates with openssl: one site CA, server certificates (the MQTT broker,
# PostgreSQL, the operator API) and one client certificate per collector or user.
#
#   make-site-ca.sh [--dir DIR] [--days N] ca
#   make-site-ca.sh [--dir DIR] [--days N] server NAME DNS-NAME-OR-IP...
#   make-site-ca.sh [--dir DIR] [--days N] client NAME...
#
# ca      DIR/ca.crt and DIR/ca.key (kept if they exist: re-running never replaces the CA).
# server  DIR/NAME.crt and DIR/NAME.key for a server reached under the given names; clients
#         verify the name they connect to against this list (hostname verification).
#         Example: server broker mosquitto broker.plant.example 10.0.0.5
# client  DIR/NAME.crt and DIR/NAME.key with common name NAME. On the broker's edge listener
#         (use_identity_as_username) NAME is the MQTT user name, and with
#         use_username_as_clientid also the client id: give each collector its collector id.
#         Never issue an edge certificate named like one of the daemon's client ids.
#
# --dir   where the files go (default ./site-tls); keys are written mode 0600.
# --days  validity of new certificates (default: 3650 for the CA, 825 for the others). A
#         negative value makes a certificate that has already expired (to test that it is refused).
#
# Keys are ECDSA P-256. The CA key signs everything: keep DIR/ca.key off the servers (only
# ca.crt is distributed). Renew a certificate by running the same command again.
set -euo pipefail

dir=./site-tls
days=""
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "make-site-ca.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || usage; days=$2; shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
cmd=$1; shift
if [ -n "$days" ] && ! [[ "$days" =~ ^-?[0-9]+$ ]]; then die "--days needs a whole number, got '$days'"; fi
command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
mkdir -p "$dir"
umask 077

valid_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$ ]] || die "'$1' is not a valid name (letters, digits, _ . : -; at most 64)"
}

new_key() {  # new_key FILE
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

sign() {  # sign NAME EXTENSIONS-FILE DAYS
  local name=$1 ext=$2 d=$3
  [ -f "$dir/ca.crt" ] && [ -f "$dir/ca.key" ] || die "no CA in $dir: run '$0 --dir $dir ca' first"
  new_key "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "/CN=$name" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$d" -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null \
    || die "signing $name failed"
  rm -f "$dir/$name.csr" "$ext"
  chmod 644 "$dir/$name.crt"
  echo "$dir/$name.crt, $dir/$name.key: $(openssl x509 -in "$dir/$name.crt" -noout -subject -enddate | tr '\n' ' ')"
}

case "$cmd" in
  ca)
    [ $# -eq 0 ] || usage
    if [ -f "$dir/ca.crt" ] || [ -f "$dir/ca.key" ]; then
      echo "$dir/ca.crt exists: kept (delete it and every certificate it signed to start over)"
      exit 0
    fi
    new_key "$dir/ca.key"
    ext=$(mktemp)
    printf '%s\n' "[v3_ca]" "basicConstraints = critical, CA:TRUE, pathlen:0" \
      "keyUsage = critical, keyCertSign, cRLSign" "subjectKeyIdentifier = hash" > "$ext"
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=plantwatch site CA" -days "${days:-3650}" \
      -config "$ext" -extensions v3_ca -out "$dir/ca.crt" 2>/dev/null || die "making the CA failed"
    rm -f "$ext"
    chmod 644 "$dir/ca.crt"
    echo "$dir/ca.crt (distribute), $dir/ca.key (keep offline): $(openssl x509 -in "$dir/ca.crt" -noout -enddate)"
    ;;
  server)
    [ $# -ge 2 ] || usage
    name=$1; shift
    valid_name "$name"
    san=""
    for h in "$@"; do
      if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+="${san:+,}IP:$h"; else san+="${san:+,}DNS:$h"; fi
    done
    ext=$(mktemp)
    printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature, keyEncipherment" \
      "extendedKeyUsage = serverAuth" "subjectAltName = $san" "subjectKeyIdentifier = hash" \
      "authorityKeyIdentifier = keyid" > "$ext"
    sign "$name" "$ext" "${days:-825}"
    ;;
  client)
    [ $# -ge 1 ] || usage
    for name in "$@"; do
      valid_name "$name"
      case "$name" in
        plantwatch|plantwatch-daemon*) echo "make-site-ca.sh: note: on the broker's edge listener '$name' would be a" \
          "user name and client id reserved for the daemon; do not give this certificate to a collector" >&2 ;;
      esac
      ext=$(mktemp)
      printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
        "extendedKeyUsage = clientAuth" "subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid" > "$ext"
      sign "$name" "$ext" "${days:-825}"
    done
    ;;
  *) usage ;;
esac
