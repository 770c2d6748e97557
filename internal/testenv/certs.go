package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a private certificate authority for tests over TLS, its
// certificate written to Path.
type CA struct {
	Cert *x509.Certificate
	Path string
	// Until, when not zero, ends the validity of the certificates the CA
	// signs from then on; else they end with the CA's.
	Until time.Time
	key   *ecdsa.PrivateKey
	dir   string
}

// NewCA makes a CA named name, valid from an hour ago to an hour ahead,
// and writes its certificate and key to dir as name.crt and name.key.
func NewCA(tb testing.TB, dir, name string) *CA {
	tb.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial(tb), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	ca := &CA{dir: dir, Path: filepath.Join(dir, name+".crt")}
	var der []byte
	der, ca.key = writeCert(tb, dir, name, tmpl, nil, nil)
	var err error
	if ca.Cert, err = x509.ParseCertificate(der); err != nil {
		tb.Fatal(err)
	}
	return ca
}

// Bundle returns the PEM of the CAs' certificates, one after another: a
// trust bundle, as a CA file holding more than one.
func Bundle(cas ...*CA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})...)
	}
	return b
}

// Pool returns a pool that trusts the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Server signs a certificate for 127.0.0.1, as a server's, and writes it
// and its key to the CA's folder as name.crt and name.key. It returns the
// pair.
func (ca *CA) Server(tb testing.TB, name string) tls.Certificate {
	tb.Helper()
	ca.issue(tb, name, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return ca.pair(tb, name)
}

// Client signs a client's certificate with common name cn and writes it
// and its key to the CA's folder as name.crt and name.key. It returns the
// pair.
func (ca *CA) Client(tb testing.TB, name, cn string) tls.Certificate {
	tb.Helper()
	ca.issue(tb, name, &x509.Certificate{Subject: pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return ca.pair(tb, name)
}

// pair loads name.crt and name.key from the CA's folder.
func (ca *CA) pair(tb testing.TB, name string) tls.Certificate {
	tb.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(ca.dir, name+".crt"), filepath.Join(ca.dir, name+".key"))
	if err != nil {
		tb.Fatal(err)
	}
	return pair
}

// Renew signs a new client certificate with common name cn and moves it
// over name.crt and name.key in the CA's folder, as a rotated secret
// replaces its files. It returns the new pair.
func (ca *CA) Renew(tb testing.TB, name, cn string) tls.Certificate {
	tb.Helper()
	pair := ca.Client(tb, name+"-renewed", cn)
	for _, ext := range []string{".crt", ".key"} {
		if err := os.Rename(filepath.Join(ca.dir, name+"-renewed"+ext), filepath.Join(ca.dir, name+ext)); err != nil {
			tb.Fatal(err)
		}
	}
	return pair
}

// issue completes tmpl (serial, validity as the CA's or until ca.Until,
// key usage), signs it and writes it.
func (ca *CA) issue(tb testing.TB, name string, tmpl *x509.Certificate) {
	tb.Helper()
	tmpl.SerialNumber = serial(tb)
	tmpl.NotBefore, tmpl.NotAfter = ca.Cert.NotBefore, ca.Cert.NotAfter
	if !ca.Until.IsZero() {
		tmpl.NotAfter = ca.Until
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	writeCert(tb, ca.dir, name, tmpl, ca.Cert, ca.key)
}

// serial returns a random certificate serial number.
func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// writeCert makes a key and the certificate tmpl for it, signed by
// parent's key (self-signed when parent is nil), and writes them to dir as
// name.crt and name.key. It returns the certificate and the key.
func writeCert(tb testing.TB, dir, name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		name + ".crt": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return der, key
}
