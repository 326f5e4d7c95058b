#!/bin/sh
# Makes the certificates the TLS tests and benchmarks use, with the openssl command, into DIR
# (created if missing).  Nothing here is committed: every key is made anew each time.
#
#   ca.pem ca.key              a test CA ("appmsg test CA")
#   server.pem server.key      CN=localhost; DNS:localhost, IP:127.0.0.1, IP:::1; from the CA
#   server2.pem server2.key    the same names, CN=localhost-2: a second certificate for reloads
#   client.pem client.key      CN=appmsg-test-client, for client authentication; from the CA
#   expired.pem expired.key    CN=localhost (same names), valid only on 1 January 2020; from the CA
#   other-ca.pem other-ca.key  another CA, which nothing trusts
#   other.pem other.key        CN=localhost (same names), from the other CA
#
# Keys are ECDSA P-256.  Usage: make_certs.sh DIR
set -eu
dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# CA database for `openssl ca`, which can set any validity period (the expired certificate).
rm -rf ca-db && mkdir ca-db && : >ca-db/index.txt && echo 1000 >ca-db/serial
cat >ca.cnf <<'CNF'
[ca]
default_ca = test_ca
[test_ca]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
default_md = sha256
policy = any_name
unique_subject = no
[any_name]
commonName = supplied
organizationName = optional
CNF
printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext

make_ca() { # make_ca NAME SUBJECT
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "$2" -days 3650 -sha256 -out "$1.pem" 2>/dev/null
}
issue() { # issue NAME CA SUBJECT EXT [ca dates...]
  name=$1 ca=$2 subj=$3 ext=$4
  shift 4
  key "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  openssl ca -batch -config ca.cnf -cert "$ca.pem" -keyfile "$ca.key" -in "$name.csr" \
    -extfile "$ext" -notext -out "$name.pem" "$@" 2>/dev/null
  rm -f "$name.csr"
}

make_ca ca "/CN=appmsg test CA"
make_ca other-ca "/CN=appmsg other CA"
issue server ca "/CN=localhost" server.ext -days 30
issue server2 ca "/CN=localhost-2" server.ext -days 30
issue client ca "/CN=appmsg-test-client" client.ext -days 30
issue expired ca "/CN=localhost" server.ext -startdate 20200101000000Z -enddate 20200102000000Z
issue other other-ca "/CN=localhost" server.ext -days 30
rm -rf ca-db ca.cnf server.ext client.ext
