// tlsmirror scan test target: a JVM with JSSE initialised, then idle.
public class JsseIdle {
    public static void main(String[] args) throws Exception {
        javax.net.ssl.SSLContext.getDefault().getSocketFactory();
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(120000);
    }
}
