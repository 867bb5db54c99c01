#!/usr/bin/env bash
# The injector's serving certificate without cert-manager: a CA and a certificate for
# <service>.<namespace>.svc made with openssl, the Secret authsidecar-injector-tls created (or
# replaced) from them, and the CA set as the webhook's caBundle.
#
#   deploy/k8s/injector/make-certs.sh [--no-apply] [DIR]
#
# DIR (default ./injector-certs) keeps ca.crt and ca.key: run the script again before tls.crt
# expires (DAYS, default 365) and the same CA signs the new certificate, so the caBundle stays
# valid and the running injector picks the new files up without a restart. Keep ca.key out of the
# cluster and out of version control. --no-apply only writes the files.
# Environment: NAMESPACE (authsidecar-injector), SERVICE (authsidecar-injector),
# WEBHOOK (authsidecar-injector), SECRET (authsidecar-injector-tls), DAYS (365).
set -euo pipefail

apply=1
if [ "${1:-}" = "--no-apply" ]; then apply=0; shift; fi
dir=${1:-./injector-certs}
namespace=${NAMESPACE:-authsidecar-injector}
service=${SERVICE:-authsidecar-injector}
webhook=${WEBHOOK:-authsidecar-injector}
secret=${SECRET:-authsidecar-injector-tls}
days=${DAYS:-365}
host="$service.$namespace.svc"

mkdir -p "$dir"
cd "$dir"
umask 077
if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
    -subj "/CN=authsidecar-injector-ca" -keyout ca.key -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
  -subj "/CN=$host" -keyout tls.key.new -out tls.csr 2>/dev/null
cat > tls.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$host,DNS:$host.cluster.local
EXT
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
  -extfile tls.ext -out tls.crt.new 2>/dev/null
mv tls.key.new tls.key
mv tls.crt.new tls.crt
rm -f tls.csr tls.ext
echo "certificate for $host in $PWD (tls.crt, tls.key; CA: ca.crt, ca.key)"

if [ "$apply" = 1 ]; then
  kubectl -n "$namespace" create secret generic "$secret" \
    --from-file=tls.crt --from-file=tls.key --from-file=ca.crt --dry-run=client -o yaml | kubectl apply -f -
  bundle=$(base64 < ca.crt | tr -d '\n')
  kubectl patch mutatingwebhookconfiguration "$webhook" --type=json \
    -p "[{\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/caBundle\", \"value\": \"$bundle\"}]"
fi
