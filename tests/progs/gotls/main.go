// tlsmirror scan test target: a Go program using crypto/tls (one HTTPS GET if given a URL), then idle.
package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if len(os.Args) > 1 {
		if r, err := c.Get(os.Args[1]); err == nil {
			r.Body.Close()
		}
	}
	fmt.Println("ready")
	time.Sleep(120 * time.Second)
}
